from ticketing_expiration.service import SERVICE

SERVICE.main()
