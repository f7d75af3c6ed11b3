"""Other kernels: fetch Debian kernels, boot them in QEMU and run scenarios inside."""
