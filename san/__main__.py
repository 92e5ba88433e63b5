"""`python -m san` is the `san` command."""
import sys

from .cli import main

sys.exit(main())
