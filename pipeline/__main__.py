"""Allow ``python -m pipeline``."""

from pipeline.launch import main

raise SystemExit(main())
