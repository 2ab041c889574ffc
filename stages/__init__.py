"""The pipeline's stage scripts, run as `python -m stages.<name>` so that a script named like a package
(stages/tensorrt.py) can never shadow it on sys.path."""
