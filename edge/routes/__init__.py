"""Route modules, one per resource; each declares its operations on an ``Api``."""
