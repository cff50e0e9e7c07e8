"""mtce: StarlingX maintenance mtcAlive messaging (mtcAgent/mtcClient) in pure Python."""

__version__ = "0.1.0"
