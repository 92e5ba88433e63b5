"""`python -m san.bench` is `san bench`."""
import sys

from .cli import main

sys.exit(main())
