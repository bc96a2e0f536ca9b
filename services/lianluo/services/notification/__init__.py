"""The notification service: closed-loop notices, threshold alerts and Notify deliveries."""
