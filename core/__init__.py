"""The shared engine: network, weights, model catalogue, restorer, QF estimation."""

if __name__ == "core":  # the source tree's root is on sys.path (e.g. python run from a checkout)
    raise ImportError("this folder is the subpackage fbcnn_plugins.core; import it by that name")
