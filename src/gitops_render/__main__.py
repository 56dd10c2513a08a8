from gitops_render.cli import main

main()
