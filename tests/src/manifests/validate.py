# Validates RELEASE=FILE pairs with kubernetes-validate, strictly (unknown
# fields are errors), in one process; prints "@@ RELEASE=FILE" before the
# validator's own lines for each pair. Run by tests/src/manifests.rs.
import sys

import jsonschema
import kubernetes_validate.utils as u

# kubernetes-validate 1.24.1 resolves each $ref with jsonschema's legacy
# RefResolver, which walks the whole definitions document (about a million
# nodes) for every fragment, with a new resolver (so no cache) per resource.
# The answer depends only on the document and the fragment, so keep it (and
# keep each loaded document, so its id stays unique). Nothing changes for
# 1.37.0, which does not use RefResolver.
if hasattr(jsonschema, "RefResolver"):
    R = jsonschema.RefResolver
    plain_fragment, plain_remote = R.resolve_fragment, R.resolve_remote
    fragments, documents = {}, {}

    def resolve_fragment(self, document, fragment):
        key = (id(document), fragment)
        if key not in fragments:
            fragments[key] = (document, plain_fragment(self, document, fragment))
        return fragments[key][1]

    def resolve_remote(self, uri):
        if uri not in documents:
            documents[uri] = plain_remote(self, uri)
        return documents[uri]

    R.resolve_fragment, R.resolve_remote = resolve_fragment, resolve_remote

for arg in sys.argv[1:]:
    release, path = arg.split("=", 1)
    print("@@ %s=%s" % (release, path), flush=True)
    u.validate_file(path, release, True, False, False)
    sys.stdout.flush()
