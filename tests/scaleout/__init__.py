"""Scale-out tests: worker hosts in network namespaces of their own, sharing one broker and one database."""
