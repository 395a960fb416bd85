"""Quality measurement: Y-PSNR / SSIM and the tables of `streamrestore eval`."""
