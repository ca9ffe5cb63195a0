"""python -m cnnfast ...: the command line (cnnfast.cli)."""
import sys

from .cli import main

sys.exit(main())
