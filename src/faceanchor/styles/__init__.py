"""Style presets (data) and the pure apply_style."""
