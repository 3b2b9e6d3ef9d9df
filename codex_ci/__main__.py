from codex_ci.cli import main

main()
