"""surgewatch/ops"""
