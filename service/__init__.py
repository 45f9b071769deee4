

def version() -> str:
    """The installed distribution's version (the image's label and the lock holder's value say it)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("marathon-consul-registrar")
    except PackageNotFoundError:
        return "unknown"
