"""`python -m abacus ...` runs the `abacus` command."""

import sys

from abacus.cli import main

sys.exit(main())
