from services.inference.main import main

raise SystemExit(main())
