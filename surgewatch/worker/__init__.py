"""surgewatch/worker"""
