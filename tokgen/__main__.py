"""`python -m tokgen ...` is the `tokgen` command."""
import sys

from tokgen.train.cli import main

sys.exit(main())
