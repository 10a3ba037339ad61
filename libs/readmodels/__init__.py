"""Read models shared by the services that write and read them (one module per stored shape)."""
