"""``python -m vidattn``: the same as the ``vidattn`` command."""

from vidattn.cli import main

if __name__ == "__main__":
    main()
