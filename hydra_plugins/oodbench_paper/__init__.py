"""oodbench\x27s Hydra plugin: the PaperSweeper of ``python run.py +paper=<name>``."""
