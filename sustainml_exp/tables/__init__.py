"""What every family's tables share: which runs pool into a cell (rows.py), cost columns (cost.py), and rendering
to Markdown, LaTeX and figures (render.py). The ``sml-tables`` command that calls the families is cli_tables.py."""
