"""itr_nb: a notebook-driven research workbook for image-text retrieval."""
__version__ = "0.1.0"
