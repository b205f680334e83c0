from ticketing_tickets.service import SERVICE

SERVICE.main()
