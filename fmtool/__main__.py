from fmtool.cli import main

raise SystemExit(main())
