"""What nixrec knows of Nix itself: the derivation model and its ATerm and JSON
forms (drv.py, drvjson.py), the store (store.py: closures, path hashes, the
reference scan) and the checks Nix runs on a build's outputs (outputs.py).
Nothing here traces or sets up a sandbox."""
