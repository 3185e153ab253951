from micromine.cli import main

raise SystemExit(main())
