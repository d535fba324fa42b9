"""Training, export and evaluation of FBCNN weights."""

if __name__ == "training":  # the source tree's root is on sys.path (e.g. python run from a checkout)
    raise ImportError("this folder is the subpackage fbcnn_plugins.training; import it by that name")
