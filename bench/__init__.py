"""`make bench`: bindingd beside the floor (a bare grpc.aio echo) measured in the same run."""
