"""The directory ``freezewatch run`` puts first on PYTHONPATH (see sitecustomize.py).

It holds nothing but that start-up hook, so the application sees no other
module through it.
"""
