"""`python -m daemon` is the `loyaltyd` command."""

import sys

from daemon.cli import main

sys.exit(main())
