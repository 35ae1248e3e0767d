"""``python -m netx_export.neurons``: print the registry's Markdown table (docs/DESIGN.md §8)."""
from netx_export.neurons import markdown_table

print(markdown_table())
