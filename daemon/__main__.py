"""`python -m daemon` is the `loyaltyd` command."""

import sys

from daemon.cli.main import main

sys.exit(main())
