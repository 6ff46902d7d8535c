from vidseg.cli import main

raise SystemExit(main())
