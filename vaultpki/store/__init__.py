"""The certs-dir store: the only package that writes files.

Every managed file is a symlink ``name -> .vaultpki/current/name``; ``current`` is
itself a symlink to one complete generation directory. A write builds a whole new
generation beside the old one (keys created 0600 with O_EXCL, all of it on disk),
then switches ``current`` with one ``rename()``. A crash at any instant leaves either
the old set or the new set visible, never a certificate beside a key it does not
match. CockroachDB skips directories and names not ending in ``.crt`` when it scans
the dir and follows symlinks when reading (as with Kubernetes' ``..data``), so
neither ``.vaultpki/`` nor the temporary links are ever loaded.

The previous generation is kept (``.vaultpki/previous``) so a bad set can be rolled back.

Other local users. The writer is often root, and a certs-dir is a place another user may
reach, so:

- the certs-dir, ``.vaultpki`` and every generation it uses must be owned by root, the
  writing user or the configured ``owner`` (the user the keys are written for), and not
  writable by group or others; anything else is refused before anything is written (and
  ``verify`` names it);
- the certs-dir is opened once, without following a link, and every later step works
  relative to that directory descriptor (``dir_fd=``, ``O_NOFOLLOW``, ``O_DIRECTORY``): a
  path swapped meanwhile changes nothing we touch;
- what was opened is what is checked (``fstat`` of the descriptor, not a second look
  at the path), and no link that leaves the certs-dir is ever followed: ``current`` must
  name a generation inside ``.vaultpki``, and a file being adopted is read through in-dir
  links only, component by component.

The modules, from the bottom up: ``descriptors`` (working relative to a directory
descriptor), ``ownership`` (who the files are for, who may hold the directories),
``opening`` (the certs-dir, ``.vaultpki`` and its generations, opened and checked),
``generation`` (building a new set), ``switching`` (making it visible, and switching
back), ``adoption`` (plain files turned into our links), ``reading`` (the dir as the
loader sees it) and ``certs_dir`` (``CertsDir``, what the rest of vaultpki uses).
"""
