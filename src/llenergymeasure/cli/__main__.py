from llenergymeasure.cli.main import main

if __name__ == "__main__":  # not when a fork server re-imports the main module
    main()
