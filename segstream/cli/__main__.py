"""``python -m segstream.cli``: the ``segstream`` command."""

import sys

from segstream.cli.main import main

sys.exit(main())
