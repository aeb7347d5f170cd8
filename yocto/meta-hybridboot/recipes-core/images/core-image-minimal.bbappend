# Example: images of the hybridnode distro (conf/distro/hybridnode.conf) join EKS at first boot.
# The hybridboot package ships a systemd preset enabling systemd-time-wait-sync, which the image's
# systemd preset-all step applies: time-sync.target, which the first-boot unit orders after, is
# then reached only once NTP has synchronised the clock.
IMAGE_INSTALL:append:hybridnode = " hybridboot hybridboot-config"
