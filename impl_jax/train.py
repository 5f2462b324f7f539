"""placeholder"""
class Trainer:
    pass
