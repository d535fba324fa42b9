"""The GIMP 3 plug-in and its worker protocol."""

if __name__ == "gimp":  # the source tree's root is on sys.path (e.g. python run from a checkout)
    raise ImportError("this folder is the subpackage fbcnn_plugins.gimp; import it by that name")
