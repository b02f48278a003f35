"""Entry point of ``python -m arena.ratings``."""

from arena.ratings.cli import main

raise SystemExit(main())
