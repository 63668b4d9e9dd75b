from batch_scheduler.commands.cli import main

raise SystemExit(main())
