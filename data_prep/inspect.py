"""(being written)"""


def add_arguments(p):
    pass


def run(args):
    raise SystemExit("not yet")
