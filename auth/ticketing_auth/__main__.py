from ticketing_auth.service import SERVICE

SERVICE.main()
