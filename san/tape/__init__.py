"""Tape media as real SIMH tape images with ANSI / ECMA-13 labels, one image file per medium.

The SAN's tape libraries (`san.elements.tape_library`) keep their media here: a medium is
``STATE_DIR/tapes/LIBRARY/MEDIA.tap``.  Debian's ``mtdump`` (package ``simh``) reads it; so
does any SIMH simulator's tape drive.  A medium never written has no image, or an empty one:
it is *blank* (``files()`` is ``[]``; catalog rebuild skips it).

One module per concern, each with its part of the design in its docstring:

    simh      the SIMH record format: data records, tape marks, the end-of-medium marker;
              reading objects one by one, writing them in batches
    labels    the ANSI / ECMA-13 label records (VOL1, HDR1, HDR2, EOF1, EOF2) and the user
              labels (UVL, UHL, UTL) whose text carries the catalog row and the trailer
    layout    the image object by object: the records of a new file, the walk that checks
              a whole image
    medium    `TapeMedium`: append a labelled file, read it, list the files; TAPE_FULL and
              MEDIA_ERROR, crash safety

The names below are the package's public ones (``from san.tape import X``).
"""
from .labels import (LABEL, MAX_FILES, check_media_id, format_labels, format_row, parse_labels,
                     parse_row)
from .layout import FILLER
from .medium import TapeMedium
from .simh import TAPE_BLOCK, END_OF_MEDIUM, TAPE_MARK, record_size

__all__ = ["TAPE_BLOCK", "END_OF_MEDIUM", "FILLER", "LABEL", "MAX_FILES", "TAPE_MARK", "TapeMedium",
           "check_media_id", "format_labels", "format_row", "parse_labels", "parse_row",
           "record_size"]
