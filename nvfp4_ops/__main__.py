"""``python -m nvfp4_ops``: the command line (:mod:`nvfp4_ops.cli.main`)."""

import sys

from nvfp4_ops.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
