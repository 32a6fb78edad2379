"""The one shared runtime of every shop process (see DESIGN.md)."""
