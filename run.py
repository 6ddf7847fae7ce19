#!/usr/bin/env python
"""reactforge from a checkout: the same command line as the installed `reactforge` command.

    python run.py --site archer2 protocol.yaml            (= reactforge run --site archer2 protocol.yaml)
    python run.py --site local --check examples/quickstart.yaml
    python run.py report runs/quickstart-zno-vacancy      (every `reactforge` command works here too)
"""
import sys

try:
    from reactforge.engine.cli import main
except ImportError as err:  # the checkout's folders are installed as the `reactforge` package
    sys.exit(f"error: reactforge is not installed in this Python ({err}); run `make setup` or `pip install -e .`")

if __name__ == "__main__":
    sys.exit(main())
