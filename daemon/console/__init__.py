"The admins' console: the Notification Manager in a browser, served by loyaltyd under /console/."
