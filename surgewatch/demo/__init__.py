"""surgewatch/demo"""
