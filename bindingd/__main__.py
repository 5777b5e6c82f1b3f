from bindingd.cli import main

raise SystemExit(main())
