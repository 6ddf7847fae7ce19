#!/usr/bin/env python
"""reactforge from a checkout: the same command line as the installed `reactforge` command.

    python run.py --site archer2 protocol.yaml
    python run.py --site local examples/quickstart.yaml --check
"""
import sys

try:
    from reactforge.engine.cli import main
except ImportError as err:  # the checkout's folders are installed as the `reactforge` package
    sys.exit(f"error: reactforge is not installed in this Python ({err}); run `make setup` or `pip install -e .`")

if __name__ == "__main__":
    sys.exit(main())
