"""``python -m nvfp4_ops``: the command line (:mod:`nvfp4_ops.cli.main`)."""

import sys

if __name__ == "__main__":
    try:
        from nvfp4_ops.cli.main import main
    except KeyboardInterrupt:  # Ctrl-C while torch is being imported
        print("nvfp4-ops: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
