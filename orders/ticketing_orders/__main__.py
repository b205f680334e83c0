from ticketing_orders.service import SERVICE

SERVICE.main()
